"""orjson where it is fast, byte for byte what the standard library writes and reads (issue #17).

Content hashes are sha256 of `payloads.compact_json` text: a different byte would make the same content
to the same contact look new and send it twice. So the fast encoder must agree with
``json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))`` on everything our bodies hold.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from campaigns.content import payloads
from campaigns.core.db import json_loads

_STDLIB = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)

# What bodies and components are made of: text, integers, booleans, null, lists and dicts of them.
_SCALARS = st.text() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.booleans() | st.none()
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
)


def test_every_character_is_written_as_the_standard_library_writes_it() -> None:
    characters = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = ["".join(characters[i : i + 512]) for i in range(0, len(characters), 512)]
    assert [payloads.compact_json(text) for text in texts] == [_STDLIB.encode(text) for text in texts]


@given(_VALUES)
def test_any_body_shaped_value_is_written_byte_for_byte_as_before(value: Any) -> None:
    assert payloads.compact_json(value) == _STDLIB.encode(value)


def test_what_orjson_refuses_is_still_written_the_standard_way() -> None:
    for value in ("lone \ud800 surrogate", {"big": 2**70}, {1: "non-text key"}):
        assert payloads.compact_json(value) == _STDLIB.encode(value)


@given(_VALUES)
def test_json_columns_read_back_what_was_written(value: Any) -> None:
    text = json.dumps(value)
    assert json_loads(text) == json.loads(text)
    assert json_loads(text.encode()) == json.loads(text)


def test_json_columns_read_what_only_the_standard_library_reads() -> None:
    assert math.isnan(json_loads('{"x": NaN}')["x"])
    assert json_loads(b'{"n": -Infinity}') == {"n": -math.inf}
    assert json_loads(memoryview(b'{"s": "\\ud800"}')) == {"s": "\ud800"}
