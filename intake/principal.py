"""Who is calling: the operator, or one account through one of its keys."""

from dataclasses import dataclass

from shared.api_keys import ACCOUNT
from shared.api_keys import OPERATOR as OPERATOR_SCOPE


@dataclass(frozen=True)
class Principal:
    account_id: str | None  # None for the operator
    key_id: int | None = None  # the stored key used; None for the operator's key from the environment
    scope: str = ACCOUNT

    @property
    def is_operator(self) -> bool:
        return self.account_id is None

    @property
    def name(self) -> str:
        return "operator" if self.account_id is None else self.account_id

    def can_access(self, account_id: str) -> bool:
        return self.account_id is None or self.account_id == account_id


OPERATOR = Principal(account_id=None, scope=OPERATOR_SCOPE)
