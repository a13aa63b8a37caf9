"""`templates create`'s local checks: one line naming the file and the field, before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from campaigns.core.exceptions import InputFileError
from campaigns.templates.submission import check_submission

BODY = {"type": "BODY", "text": "Ciao {{1}}, codice {{2}}", "example": {"body_text": [["Giulia", "X1"]]}}
GOOD: dict[str, Any] = {
    "name": "autumn_promo",
    "language": "it",
    "category": "marketing",
    "components": [BODY],
}


def _file(tmp_path: Path, data: Any, name: str = "t.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_good_template_is_submitted_with_its_format_and_category_upper_case(tmp_path: Path) -> None:
    submission = check_submission(_file(tmp_path, {**GOOD, "message_send_ttl_seconds": 86400}))
    assert submission.body == {
        "name": "autumn_promo",
        "language": "it",
        "category": "MARKETING",
        "parameter_format": "POSITIONAL",
        "components": [BODY],
        "message_send_ttl_seconds": 86400,
    }
    assert submission.record.status == "PENDING"


def test_yaml_is_read_like_json(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: hello\nlanguage: en\ncategory: UTILITY\nparameter_format: NAMED\ncomponents:\n"
        "  - type: BODY\n    text: 'Hi {{first_name}}'\n"
        "    example: {body_text_named_params: [{param_name: first_name, example: Ann}]}\n",
        encoding="utf-8",
    )
    assert check_submission(path).body["parameter_format"] == "NAMED"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Autumn Promo"}, "field 'name' 'Autumn Promo' must be 1 to 512 lowercase letters"),
        ({"category": "PROMO"}, "field 'category' 'PROMO' is not MARKETING, UTILITY or AUTHENTICATION"),
        ({"language": ""}, "field 'language' is missing"),
        (
            {"components": [{**BODY, "text": "x" * 1025}]},
            "field 'components[0].text' (BODY) is 1025 characters, the limit is 1024",
        ),
        (
            {"components": [{"type": "HEADER", "format": "TEXT", "text": "h" * 61}, BODY]},
            "field 'components[0].text' (HEADER) is 61 characters, the limit is 60",
        ),
        (
            {"components": [{**BODY, "text": "Ciao {{1}} {{name}}"}]},
            "field 'components[0].text' mixes numbered and named placeholders",
        ),
        (
            {"components": [{**BODY, "text": "Ciao {{1}} {{3}}"}]},
            "placeholders must be {{1}}, {{2}} … in turn ({{1}}, {{3}})",
        ),
        (
            {"parameter_format": "NAMED"},
            "field 'components[0].text' has numbered placeholders but parameter_format is NAMED",
        ),
        ({"components": [{"type": "BODY", "text": "Ciao {{1}}"}]}, "placeholder body.1 has no example"),
        (
            {"message_send_ttl_seconds": 60},
            "field 'message_send_ttl_seconds' 60 must be whole seconds from 43200 to 2592000 for MARKETING",
        ),
        ({"components": []}, "field 'components' must hold exactly one BODY"),
    ],
)
def test_a_refusal_is_one_line_naming_the_file_and_the_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = _file(tmp_path, {**GOOD, **change})
    with pytest.raises(InputFileError) as refused:
        check_submission(path)
    text = str(refused.value)
    assert text.startswith(f"{path}: ") and message in text
    assert "\n" not in text


def test_a_file_that_is_not_json_says_where(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"name": "x",\n "language": }', encoding="utf-8")
    with pytest.raises(InputFileError, match=r"t.json: line 2: not valid JSON"):
        check_submission(path)
