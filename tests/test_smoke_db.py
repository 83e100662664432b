from core import audit
from trust_space.models import Professional


def test_schema_roundtrip(db):
    with db.transaction() as s:
        s.add(Professional(rpps="10000000001", first_name="Marie", last_name="Martin"))
    with db.transaction() as s:
        p = s.query(Professional).one()
        assert p.national_id == "810000000001"
        audit.record(s, actor="x", action="t", outcome="ok")
    with db.transaction() as s:
        assert audit.verify(s).ok
