"""A key pair in the generated config and a bearer token for a `validate-jwt` target
(mint_token.py), before it starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.scripts import SetupError, run_script

JwtAlg = Literal["RS256", "ES256"]
# Fresh tokens the minting script validates once, in-process, to price the uncached path.
VERIFY_SAMPLES = 1000


@dataclass(frozen=True, slots=True)
class ValidateTiming:
    """Medians of aigw's JwtValidator.validate, in-process: a token never seen, a cached one."""

    samples: int
    uncached_p50_us: float
    cached_p50_us: float


@dataclass(frozen=True, slots=True)
class MintedToken:
    header: tuple[str, str] = field(repr=False)  # Authorization: Bearer <token>
    alg: str
    token_bytes: int
    seconds: float  # key generation and signing, as timed by the script
    validate: ValidateTiming | None = None  # if measured

    def to_json(self) -> dict[str, Any]:
        """What the results keep: never the token."""
        out: dict[str, Any] = {
            "alg": self.alg,
            "token_bytes": self.token_bytes,
            "seconds": self.seconds,
        }
        return out | ({"validate": asdict(self.validate)} if self.validate else {})


def mint_token(
    python: str, config: Path, alg: JwtAlg, cwd: Path, verify_samples: int = 0
) -> MintedToken:
    """Put a fresh `alg` public key into `config`'s validate-jwt and mint a token for it."""
    args = ["--config", str(config), "--alg", alg, "--verify", str(verify_samples)]
    raw = run_script(python, "mint_token.py", args, cwd, f"minting an {alg} token")
    try:
        timing = raw.get("verify")
        validate = None
        if timing:
            validate = ValidateTiming(
                int(timing["samples"]),
                float(timing["uncached_p50_us"]),
                float(timing["cached_p50_us"]),
            )
        return MintedToken(
            header=(str(raw["header"]), str(raw["value"])),
            alg=str(raw["alg"]),
            token_bytes=int(raw["token_bytes"]),
            seconds=float(raw["seconds"]),
            validate=validate,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise SetupError(f"unexpected output from the minting script: {err!r}") from err
