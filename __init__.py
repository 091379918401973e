"""possim: a payment-acquiring lab — POS terminal, acquirer host, mock HSM,
settlement and reconciliation, talking real ISO 8583 bytes."""

__version__ = "0.1.0"
