"""Column roles: which columns go through the network, which become tokens, which stay as they are.

A role is decided once, at fit time, and recorded in the profile; this module is the one place
that decides it. Inference looks at the Arrow type, the cardinality in the fit sample and hints
in the column name; a dataset config file (TOML) overrides it per column.
"""

from __future__ import annotations

import enum
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from iae_privacy.errors import ConfigError

__all__ = ["Role", "CodecConfig", "RoleDecision", "infer_role", "network_kind", "dense_values"]


class Role(str, enum.Enum):
    """What happens to a column."""

    FEATURE = "feature"
    """Through the network: numbers, booleans, dates and times, low-cardinality categories."""
    IDENTIFIER = "identifier"
    """Analysts see a keyed token; the value itself is sealed in the vault."""
    PASSTHROUGH = "passthrough"
    """Declared non-sensitive: copied to the latent table unchanged."""
    VAULT = "vault"
    """A type the network cannot take (binary, nested, ...): kept whole, sealed in the vault."""


# Name hints: a column whose name contains one of these words holds identifying values whatever
# its type. Names are split on non-alphanumerics and camelCase before matching.
IDENTIFIER_WORDS = frozenset(
    """
    id ids uuid guid rownames rowname key name names firstname lastname surname fullname
    username user login email mail phone tel telephone mobile fax ssn nin sin national passport
    license licence address street ip iban account card note notes comment comments text
    description memo remarks
    """.split()
)

ID_UNIQUENESS = 0.9
"""A number column with an identifying name is an identifier only if it holds integers that look
like ids: at least this share of its present values distinct (row numbers, person numbers), or
more distinct values than ``max_categories`` (a person number repeated over visits). Otherwise
(fractions, a few codes) it is a feature."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")


def name_hint(column: str) -> str | None:
    """The identifying word in a column name, if any.

    >>> name_hint("patient_id"), name_hint("EmailAddress"), name_hint("idp")
    ('id', 'email', None)
    """
    words = _SPLIT.split(_CAMEL.sub("_", column).lower())
    return next((w for w in words if w in IDENTIFIER_WORDS), None)


def dense_values(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Dictionary-encoded values as a plain array of the value type; others unchanged."""
    if pa.types.is_dictionary(values.type):
        return values.cast(values.type.value_type)
    return values


def network_kind(type_: pa.DataType) -> str | None:
    """The feature kind the network can take for this Arrow type, or None if it cannot take it.

    Dictionary-encoded columns are judged by their value type.
    """
    t = type_.value_type if pa.types.is_dictionary(type_) else type_
    if pa.types.is_boolean(t):
        return "boolean"
    if (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_duration(t)
    ):
        return "number"
    if pa.types.is_decimal128(t):
        return "decimal"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "category"
    return None


_DOMAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VAULT_COMPRESSIONS = ("entropy", "lz4", "zstd", "none")


@dataclass(frozen=True)
class CodecConfig:
    """Per-dataset settings: role overrides and how finely numbers are cut for the network.

    Loaded from a TOML file::

        [columns]
        zper = "identifier"      # a person number the name does not give away
        region = "passthrough"   # declared non-sensitive
        race = "protected"       # a feature the latent table must not give away (model/protection.py)

        [codec]
        levels = 4096            # coarse levels per numeric column
        max_categories = 256     # more distinct strings than this: an identifier
        sample_rows = 200000     # rows read to fit the codec
        vault_compression = "entropy"  # vault segments compressed before sealing: entropy, lz4, zstd or none
        public_bits = 8          # z_public released coarse: about 2**8 steps across each column (default: exact)

        [tokens]
        patient_id = "patient"   # a join domain: every column naming it, in any dataset, shares tokens

        [analysis]
        target = "wage"          # what analysts will model: its best predictors get public axes of their own
    """

    roles: dict[str, Role] = field(default_factory=dict)
    levels: int = 4096
    max_categories: int = 256
    sample_rows: int = 200_000
    join_domains: dict[str, str] = field(default_factory=dict)
    """Identifier column -> join domain. Without one, a column's tokens are its own (dataset,
    column): equal values in two datasets get different tokens."""
    protected: tuple[str, ...] = ()
    """Feature columns whose values analysts' latent table must not reveal (``"protected"`` in
    ``[columns]``, or ``train --protect``): see :mod:`iae_privacy.model.protection`."""
    vault_compression: str = "entropy"
    """How each vault segment is compressed before it is sealed: ``entropy`` (the batch's codes
    entropy-coded, :mod:`iae_privacy.compression.batch`: the smallest; a format-2 dataset's),
    or an Arrow IPC stream of z and the codec detail with ``lz4`` (fast; models trained before
    issue 19), ``zstd`` or ``none``. Compressing before encrypting makes a segment's sealed length
    depend on how its rows compress together: ``none`` hides that, at 2-4x the vault's size
    (docs/threat-model.md). Part of the codec profile: fixed when the model is trained."""
    target: str | None = None
    """The declared analysis target (``[analysis] target``, or ``train --target``): a passthrough
    or feature column analysts will model. Its best predictors each get a z_public column of their
    own (:func:`iae_privacy.analysts.target.favoured_features`), and the train report states how well
    the latent table predicts it."""

    public_bits: int | None = None
    """z_public released coarse (``[codec] public_bits``): each column rounded to a power-of-two
    step, about ``2**public_bits`` steps across its spread (four standard deviations of the
    training sample's z_public); None: the network's exact integers. A smaller latent part (issue
    19: 10-21 bits a column become about ``public_bits``) that tells less; restores do not use it
    (the vault holds every record whole). Not with protected columns, whose release is rounded
    already."""
    public_steps: tuple[int, ...] = ()
    """The steps themselves, one per z_public column: set when the model is trained
    (:func:`iae_privacy.model.pipeline.fit_model`), kept in the codec profile."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "protected", tuple(dict.fromkeys(self.protected)))
        object.__setattr__(self, "public_steps", tuple(int(s) for s in self.public_steps))
        if self.public_bits is not None:
            if isinstance(self.public_bits, bool) or not isinstance(self.public_bits, int) \
                    or not 1 <= self.public_bits <= 24:
                raise ConfigError(f"codec.public_bits must be a whole number from 1 to 24, got {self.public_bits!r}")
            if self.protected:
                raise ConfigError("codec.public_bits and protected columns: the protected columns' release is "
                                  "rounded already; choose one")
        if any(s < 1 or s & (s - 1) for s in self.public_steps):
            raise ConfigError("codec public_steps must be powers of two")
        if self.target is not None and (not isinstance(self.target, str) or not self.target):
            raise ConfigError(f"analysis.target must be a column name, got {self.target!r}")
        if self.target in self.protected:
            raise ConfigError(f"column {self.target!r} is both protected and the analysis target: analysts "
                              "cannot model a column the latent table must not give away. Choose one")
        if self.target is not None and self.roles.get(self.target) is Role.IDENTIFIER:
            raise ConfigError(f"the analysis target {self.target!r} is declared an identifier: analysts get only "
                              "its tokens, which no model can learn from. Declare it passthrough or feature")
        for column in self.protected:
            if column in self.roles and self.roles[column] is not Role.FEATURE:
                raise ConfigError(f"column {column!r} is declared {self.roles[column].value} and protected: a "
                                  f"{self.roles[column].value} column is in the analysts' files (or the vault "
                                  "whole) by design; a protected one goes through the network. Choose one")
            if column in self.join_domains:
                raise ConfigError(f"tokens.{column}: a protected column has no tokens (it is a feature)")
            self.roles[column] = Role.FEATURE  # a protected column goes through the network, whatever its name
        if not 2 <= self.levels <= 1 << 20:
            raise ConfigError(f"codec.levels must be between 2 and {1 << 20}, got {self.levels}")
        if not 1 <= self.max_categories <= 1 << 16:
            raise ConfigError(
                f"codec.max_categories must be between 1 and {1 << 16}, got {self.max_categories}"
            )
        if self.sample_rows < 1:
            raise ConfigError(f"codec.sample_rows must be positive, got {self.sample_rows}")
        if self.vault_compression not in VAULT_COMPRESSIONS:
            raise ConfigError(f"codec.vault_compression must be one of {', '.join(VAULT_COMPRESSIONS)}, "
                              f"got {self.vault_compression!r}")
        for column, domain in self.join_domains.items():
            if not isinstance(domain, str) or not _DOMAIN.match(domain):
                raise ConfigError(f"tokens.{column}: a join domain is a name of letters, digits, '_', '.' "
                                  f"and '-' (up to 64), got {domain!r}")
            if self.roles.get(column, Role.IDENTIFIER) is not Role.IDENTIFIER:
                raise ConfigError(f"tokens.{column}: only identifier columns have tokens, and {column!r} "
                                  f"is declared {self.roles[column].value}")

    @classmethod
    def load(cls, path: str | Path) -> CodecConfig:
        """Read a dataset config file; errors name the file and the key at fault."""
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        unknown = set(doc) - {"columns", "codec", "tokens", "analysis"}
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; expected [columns], [codec], [tokens], "
                              "[analysis]")
        analysis = dict(doc.get("analysis", {}))
        if set(analysis) - {"target"}:
            raise ConfigError(f"{path}: unknown key(s) in [analysis]: {sorted(set(analysis) - {'target'})}")
        roles, protected = {}, []
        for column, value in doc.get("columns", {}).items():
            if value == "protected":
                protected.append(column)
                continue
            try:
                roles[column] = Role(value)
            except ValueError:
                allowed = ", ".join([r.value for r in Role] + ["protected"])
                raise ConfigError(
                    f"{path}: column {column!r} has role {value!r}; expected one of {allowed}"
                ) from None
        codec = dict(doc.get("codec", {}))
        unknown = set(codec) - {"levels", "max_categories", "sample_rows", "vault_compression", "public_bits"}
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) in [codec]: {sorted(unknown)}")
        for key, value in codec.items():
            if key == "vault_compression":
                if not isinstance(value, str):
                    raise ConfigError(f"{path}: codec.vault_compression must be a string: "
                                      f"{', '.join(VAULT_COMPRESSIONS)}")
            elif not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{path}: codec.{key} must be an integer")
        try:
            return cls(roles=roles, join_domains=dict(doc.get("tokens", {})), protected=tuple(protected),
                       target=analysis.get("target"), **codec)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class RoleDecision:
    role: Role
    reason: str


def infer_role(name: str, column: pa.ChunkedArray, config: CodecConfig) -> RoleDecision:
    """Decide a column's role from the config, its type, its name and its cardinality."""
    kind = network_kind(column.type)
    if name in config.roles:
        role = config.roles[name]
        if role is Role.FEATURE and kind is None:
            raise ConfigError(
                f"column {name!r} is declared a feature, but the network cannot take its type "
                f"{column.type}; declare it identifier, passthrough or vault"
            )
        return RoleDecision(role, "set in config")
    if kind is None:
        return RoleDecision(Role.VAULT, f"type {column.type} is kept whole")
    hint = name_hint(name)
    if hint is not None and kind == "category":
        return RoleDecision(Role.IDENTIFIER, f"name hint {hint!r}")
    if hint is not None and kind in ("number", "decimal"):
        # a number is an id only if it looks like one: integers, (nearly) one per row. A word in the
        # name alone (account_never_delinq_percent) would cost analysts a feature, and give them a
        # token whose few values cover most rows
        values = dense_values(column)
        present = len(values) - values.null_count
        distinct = pc.count_distinct(values).as_py() if present else 0
        integral = pa.types.is_integer(values.type)
        if integral and present and (distinct >= ID_UNIQUENESS * present or distinct > config.max_categories):
            return RoleDecision(Role.IDENTIFIER, f"name hint {hint!r}, {distinct:,} distinct integers of {present:,}")
        return RoleDecision(Role.FEATURE, f"{kind}; name hint {hint!r} ignored: "
                            + ("not integers" if not integral else f"{distinct:,} distinct of {present:,}, not an id"))
    if kind == "category":
        values = dense_values(column)
        distinct = pc.count_distinct(values).as_py()
        present = len(values) - values.null_count
        if distinct > config.max_categories or (present > 0 and distinct > present // 2):
            return RoleDecision(Role.IDENTIFIER, f"{distinct:,} distinct of {present:,}: high cardinality")
        return RoleDecision(Role.FEATURE, f"{distinct:,} categories")
    return RoleDecision(Role.FEATURE, f"{kind}")
