"""The acquirer host: authorization pipeline, issuer stub, journal and the TCP server around its bytes-in/bytes-out core."""
