"""AppTest on the Claims page: every one of the 23 rows renders with its verdict, without an error."""


def test_claims_page_renders_all_23_rows(app_page):
    at = app_page("claims")
    assert len(at.expander) == 23
    summary = at.dataframe[0].value
    assert len(summary) == 23 and list(summary["#"]) == list(range(1, 24))
    verdicts = {m.label: m.value for m in at.metric}
    assert sum(int(v) for k, v in verdicts.items() if k[0] in "✓~✗?") == 23
    assert not at.error
