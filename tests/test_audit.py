"""The audit log: any edited, deleted, reordered or inserted entry, and a cut-off tail, is found and
located; an append refuses to build on a log that fails its checks."""

from __future__ import annotations

import json

import pytest

from iae_privacy.audit import AuditError, AuditLog, NonceUsedError
from iae_privacy.keyring import Keyring


@pytest.fixture
def log(tmp_path) -> AuditLog:
    keyring = Keyring.init(tmp_path / "keys")
    audit = AuditLog(tmp_path / "audit" / "audit.log", tmp_path / "keys" / "audit.checkpoint", keyring)
    audit.start()
    for i in range(5):
        audit.append("decode", "refused", principal=f"p{i}", rows=i, reason="test")
    return audit


def lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def rewrite(log: AuditLog, new: list[bytes]) -> None:
    log.path.write_bytes(b"".join(new))


def test_an_intact_log_verifies_and_chains_each_entry_to_the_one_before(log):
    report = log.verify()
    assert report.ok and report.entries == 6
    entries = log.entries()
    assert [e["seq"] for e in entries] == list(range(1, 7))
    assert all(b["prev"] == a["mac"] for a, b in zip(entries, entries[1:]))


def test_an_edited_entry_is_found_at_its_line(log):
    content = lines(log)
    content[3] = content[3].replace(b'"rows":2', b'"rows":9')
    rewrite(log, content)
    assert log.verify().problems == ["line 4: entry was edited or is not a genuine entry (MAC fails)"]


def test_a_deleted_entry_is_found_where_the_sequence_breaks(log):
    content = lines(log)
    del content[2]
    rewrite(log, content)
    problems = log.verify().problems
    assert problems[0].startswith("line 3: holds entry 4")


def test_reordered_entries_are_found(log):
    content = lines(log)
    content[2], content[3] = content[3], content[2]
    rewrite(log, content)
    assert log.verify().problems[0].startswith("line 3: holds entry 4")


def test_an_inserted_entry_cannot_be_forged_without_the_key(log):
    content = lines(log)
    forged = json.loads(content[2])
    forged.update(seq=4, prev=json.loads(content[2])["mac"], principal="mallory")
    content.insert(3, json.dumps(forged, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    rewrite(log, content)
    assert log.verify().problems[0] == "line 4: entry was edited or is not a genuine entry (MAC fails)"


def test_a_copied_genuine_entry_inserted_elsewhere_breaks_the_chain(log):
    content = lines(log)
    content.insert(3, content[1])
    rewrite(log, content)
    assert log.verify().problems[0].startswith("line 4: holds entry 2")


def test_cutting_entries_off_the_end_is_caught_by_the_checkpoint(log):
    rewrite(log, lines(log)[:4])
    assert log.verify().problems == ["the log ends at entry 4 but the checkpoint records entry 6: "
                                     "entries 5..6 were cut off the end"]


def test_a_deleted_log_or_checkpoint_is_caught(log):
    log.checkpoint.unlink()
    assert "checkpoint" in log.verify().problems[0]
    with pytest.raises(AuditError, match="fails its checks"):
        log.append("decode", "refused")


def test_an_append_refuses_to_build_on_a_damaged_log(log):
    content = lines(log)
    content[-1] = content[-1].replace(b'"rows":4', b'"rows":5')
    rewrite(log, content)
    with pytest.raises(AuditError, match="line 6: entry was edited"):
        log.append("decode", "granted")
    assert len(lines(log)) == 6


def test_a_nonce_is_granted_once(log):
    log.grant_once("ab" * 16, principal="p")
    with pytest.raises(NonceUsedError, match="already used"):
        log.grant_once("ab" * 16, principal="p")
    log.grant_once("cd" * 16, principal="p")
    assert log.verify().ok


def test_a_nonce_that_needs_escaping_in_json_is_still_granted_once(log):
    nonce = 'a"b\\c'
    log.grant_once(nonce, principal="p")
    with pytest.raises(NonceUsedError):
        log.grant_once(nonce, principal="p")


def test_a_replay_is_refused_even_after_its_grant_entry_was_edited(log):
    import datetime

    started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    log.grant_once("ab" * 16, since=started, principal="p")
    log.append("decode", "restored", principal="p", rows=1)  # later entries: the grant is no longer the tail
    content = lines(log)
    content[-2] = content[-2].replace(b"ab" * 16, b"ef" * 16)  # hide the first use from the replay check
    rewrite(log, content)
    with pytest.raises(AuditError, match="line 7: entry was edited"):
        log.grant_once("ab" * 16, since=started, principal="p")
    assert len(lines(log)) == 8  # nothing granted
    # entries written before the request could exist are left to 'audit verify'
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    log.grant_once("12" * 16, since=later, principal="p")
    assert "line 7: entry was edited or is not a genuine entry (MAC fails)" in log.verify().problems
