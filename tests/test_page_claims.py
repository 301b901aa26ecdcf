"""AppTest on the Claims page: all 33 rows (CLAIMS.md 1–23, CLAIMS-2.md 24–33) render, grouped by file, each with its
verdict, without an error."""


def test_claims_page_renders_all_33_rows_grouped_by_file(app_page):
    at = app_page("claims")
    assert len(at.expander) == 33
    summary = at.dataframe[0].value
    assert len(summary) == 33 and list(summary["#"]) == list(range(1, 34))
    assert list(summary["file"]) == ["CLAIMS.md"] * 23 + ["CLAIMS-2.md"] * 10
    assert [h.value for h in at.subheader] == ["CLAIMS.md: rows 1–23", "CLAIMS-2.md: rows 24–33"]
    assert [e.label.split(".**")[0] for e in at.expander] == [f"**{i}" for i in range(1, 34)]
    verdicts = {m.label: m.value for m in at.metric}
    assert sum(int(v) for k, v in verdicts.items() if k[0] in "✓~✗?") == 33
    assert not at.error
