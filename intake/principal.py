"""Who is calling: the operator, or one account."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    account_id: str | None  # None for the operator

    @property
    def is_operator(self) -> bool:
        return self.account_id is None

    @property
    def name(self) -> str:
        return "operator" if self.account_id is None else self.account_id

    def can_access(self, account_id: str) -> bool:
        return self.account_id is None or self.account_id == account_id


OPERATOR = Principal(account_id=None)
