"""Who may restore what: principals, the policy, signed decode requests, and the audited restore.

This module is where a decode is authorised, and the only way to one:

* a **principal** is a person with an Ed25519 key pair; the private half is theirs (a file only
  they can read), the public half sits in the policy;
* the **policy** (``keys/policy.json``) maps principals to roles, and roles to datasets, columns,
  a row limit per request and whether whole-dataset restores are allowed. It is MAC'd with the
  policy subkey and changed only through iae-privacy, which audits every change: a policy edited
  by hand is refused;
* a **decode request** is signed by its principal and names the dataset and the parts it covers
  (with a hash of their signed manifest records), the columns and rows, the purpose, an expiry
  and a nonce. It works once;
* :meth:`AccessControl.authorize` (:mod:`.authorize`) checks all of that, writes the audit entry (no entry, no
  restore) and returns a :class:`Grant`; only :meth:`AccessControl.restore` (:mod:`.restore`) then opens the model
  and the vault, and restores exactly what the grant covers.

Every refusal is an :class:`AccessRefused` with the reason, recorded in the audit log, and leaves
no output file.
"""

from __future__ import annotations

from iae_privacy.access.audit import AuditLog
from iae_privacy.access.authorize import CLOCK_SKEW, Authorizer, Grant
from iae_privacy.access.policy import (
    ADMIN,
    DEFAULT_MAX_LIFETIME,
    MAX_TTL,
    AccessRole,
    Policy,
    PolicyStore,
    Principal,
    check_name,
    parse_ttl,
)
from iae_privacy.access.requests import DecodeRequest, make_request
from iae_privacy.access.restore import Restorer
from iae_privacy.errors import AccessRefused
from iae_privacy.keys.keyring import Keyring
from iae_privacy.workspace import Workspace

__all__ = ["AccessControl", "AccessRefused", "AccessRole", "DecodeRequest", "Grant", "Policy", "Principal",
           "PolicyStore", "ADMIN", "CLOCK_SKEW", "DEFAULT_MAX_LIFETIME", "MAX_TTL", "check_name", "make_request",
           "parse_ttl"]


class AccessControl(Authorizer, Restorer):
    """The policy, the principals and the audit log of a workspace, and the authorised restore:
    the policy store (:mod:`.policy`), the authorizer (:mod:`.authorize`) and the restore
    (:mod:`.restore`) over one workspace, keyring and audit log."""

    def __init__(self, workspace: Workspace, keyring: Keyring) -> None:
        self.workspace = workspace
        self.keyring = keyring
        self.audit = AuditLog(workspace.audit_log, workspace.keys / "audit.checkpoint", keyring)
