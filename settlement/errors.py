"""The one error settlement raises for what a user can fix: the message names the date, file, line or
field at fault, and nothing was written."""


class SettlementError(ValueError):
    pass
