"""How the API service is configured: where it keeps files and operations, who may
call it, how many jobs of a kind run at once, how webhooks are retried."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Jobs of a kind running at once; more wait in a queue, in the order they came.
DEFAULT_LIMITS = {"dump": 2, "restore": 2, "sync": 1, "anonymize": 1, "scan": 2, "verify": 2, "audit": 4}


@dataclass(frozen=True)
class ApiSettings:
    # Files (dumps) live under data_dir/dumps, confined there; operations in data_dir/state.
    data_dir: Path
    # The bearer token every request must carry; None: none (`pgveil api --insecure-local`).
    token: str | None
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    # Webhook delivery: attempts in all, and the first wait between them (doubling).
    webhook_attempts: int = 5
    webhook_backoff: float = 1.0
    webhook_timeout: float = 10.0
    # How long a cancelled job has after SIGINT to clean up before it is killed.
    cancel_grace: float = 15.0

    @property
    def delivery_time(self) -> float:
        """The longest one webhook event can take: every attempt and every wait."""
        waits = sum(self.webhook_backoff * float(2**i) for i in range(self.webhook_attempts - 1))
        return self.webhook_attempts * self.webhook_timeout + waits

    @property
    def dumps_dir(self) -> Path:
        return self.data_dir / "dumps"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    def limit(self, kind: str) -> int:
        return self.limits.get(kind, 2)
