"""The audit log: any edited, deleted, reordered or inserted entry, and a cut-off tail, is found and
located; an append refuses to build on a log that fails its checks."""

from __future__ import annotations

import json

import pytest

from iae_privacy.access.audit import AuditError, AuditLog, NonceUsedError
from iae_privacy.keys.keyring import Keyring


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


@pytest.mark.parametrize("copied", ["an older line", "a later line"])
def test_a_genuine_line_copied_over_the_grant_cannot_hide_it_from_the_replay_check(log, copied):
    """The attack: overwrite the earlier 'granted' line with a copy of another genuine line (every
    MAC holds, the log's last lines are intact), then replay the request."""
    import datetime

    started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    log.grant_once("ab" * 16, since=started, principal="p")
    log.append("decode", "restored", principal="p", rows=1)
    log.append("decode", "refused", principal="q", rows=0, reason="test")
    content = lines(log)
    content[6] = content[1] if copied == "an older line" else content[8]
    rewrite(log, content)
    with pytest.raises(AuditError, match="line 7"):
        log.grant_once("ab" * 16, since=started, principal="p")
    assert len(lines(log)) == 9  # nothing granted


def test_a_short_write_on_a_full_disk_is_undone_and_grants_nothing(log):
    """A real short write: the file may grow by only 40 bytes (RLIMIT_FSIZE), as on a full disk."""
    import resource

    before, checkpoint = log.path.read_bytes(), log.checkpoint.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 40, hard))
    try:
        with pytest.raises(AuditError, match="cannot be written"):
            log.grant_once("ab" * 16, principal="p")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert log.path.read_bytes() == before and log.checkpoint.read_bytes() == checkpoint
    assert log.verify().ok
    log.grant_once("ab" * 16, principal="p")  # nothing was granted, so the request still works once


def test_a_torn_last_line_is_reported_as_torn_and_only_it_is_repaired(log):
    whole = log.path.read_bytes()
    log.path.write_bytes(whole + b'{"event":"decode","outcome":"gran')  # a crash in the middle of an append
    problems = log.verify().problems
    assert len(problems) == 1 and "line 7: the last line is torn" in problems[0] and "audit repair" in problems[0]
    with pytest.raises(AuditError, match="torn"):
        log.append("decode", "refused")
    assert log.repair() == len(b'{"event":"decode","outcome":"gran')
    assert log.verify().ok
    assert (log.entries()[-1]["event"], log.entries()[-1]["outcome"], log.entries()[-1]["removed_line"]) == \
        ("audit", "repaired", 7)
    with pytest.raises(AuditError, match="no torn last line"):
        log.repair()


def test_an_edit_is_never_repaired_even_with_a_torn_tail(log):
    content = lines(log)
    content[2] = content[2].replace(b'"rows":1', b'"rows":9')
    rewrite(log, content + [b'{"torn'])
    with pytest.raises(AuditError, match="other problems.*line 3"):
        log.repair()
    content = lines(log)
    rewrite(log, content[:-1] + [content[-1] + b"\n"])  # a line that is whole but not genuine
    with pytest.raises(AuditError, match="no torn last line"):
        log.repair()


def test_a_log_deleted_together_with_its_checkpoint_is_caught(log):
    log.path.unlink()
    log.checkpoint.unlink()
    reopened = AuditLog(log.path, log.checkpoint, Keyring.open(log.checkpoint.parent))
    assert "both missing, but the keyring records" in reopened.verify().problems[0]
    with pytest.raises(AuditError, match="was started on .* and is missing"):
        reopened.start()
    with pytest.raises(AuditError, match="fails its checks"):
        reopened.append("decode", "refused")


def test_the_latest_entry_of_an_event_cannot_be_an_older_one_put_back(log):
    log.append("policy", "role-set", policy_sha256="1" * 64)
    log.append("policy", "role-set", policy_sha256="2" * 64)
    assert log.last_entry("policy")["policy_sha256"] == "2" * 64
    content = lines(log)
    rewrite(log, content[:-1] + [content[-2]])  # the newest policy entry replaced by the one before
    with pytest.raises(AuditError, match="fails its checks"):
        log.last_entry("policy")
