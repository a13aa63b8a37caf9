"""Content: a campaign's placeholders bound to contact columns, and the request bodies they render to."""
