from pathlib import Path

from include.audit.catalog import ACTION_TYPES, ACTIONS, action_type

# A copy of the product doc kept in the repository, so the test reads nothing outside it.
DOC = Path(__file__).resolve().parents[1] / "docs" / "audit-logs-product-doc.md"


def test_catalog_has_the_48_actions_in_12_types():
    assert len(ACTIONS) == 48
    assert len(ACTION_TYPES) == 12
    assert action_type("CreateJobRun") == "Job Run"
    assert action_type("UpdateUserRole") == "Organization Settings"
    assert action_type("SaveEnvironmentPresetRuntime") == "Runtime"


def test_catalog_is_case_sensitive():
    assert "createjobrun" not in ACTIONS


def test_catalog_matches_the_product_doc_table():
    text = DOC.read_text()
    table = text.split("## List of Auditable Events")[1].split("## Feature")[0]
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("|") and "---" not in line
    ][1:]
    assert {action: kind for kind, action in rows} == dict(ACTIONS)
