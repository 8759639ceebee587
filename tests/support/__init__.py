"""Test support code: stand-ins the tests start themselves (loopback model server, tiny model)."""
