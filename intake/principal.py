"""Who is calling: the operator, one account through one of its keys (acting as its owner), or one user of an
account through that user's key (acting with the user's role)."""

from dataclasses import dataclass

from shared.api_keys import ACCOUNT
from shared.api_keys import OPERATOR as OPERATOR_SCOPE

OPERATOR_ROLE, OWNER, ADMIN, USER = "operator", "owner", "admin", "user"
ROLES = (OPERATOR_ROLE, OWNER, ADMIN, USER)  # widest first


def with_article(role: str) -> str:
    """"a user", "an admin", "an owner", "an operator": the article as the word is spoken, not spelled."""
    return f"{'a' if role == USER else 'an'} {role}"


@dataclass(frozen=True)
class Principal:
    account_id: str | None  # None for the operator
    key_id: int | None = None  # the stored key used; None for the operator's key from the environment
    scope: str = ACCOUNT
    user_id: str | None = None  # a user key's user: its sends are charged to that user
    role: str = OWNER  # an account key acts as the account's owner

    @property
    def is_operator(self) -> bool:
        return self.account_id is None

    @property
    def name(self) -> str:
        """Who did it, in account events and as the namespace of Idempotency-Keys."""
        return "operator" if self.account_id is None else self.user_id or self.account_id

    @property
    def own_only(self) -> str | None:
        """The user whose messages, calls, campaigns and transactions alone this caller may read (role `user`);
        None: the whole account's."""
        return self.user_id if self.role == USER else None

    def can_access(self, account_id: str) -> bool:
        return self.account_id is None or self.account_id == account_id


OPERATOR = Principal(account_id=None, scope=OPERATOR_SCOPE, role=OPERATOR_ROLE)
