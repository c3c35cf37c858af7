from tests.fakes.alpaca_fixtures import alpaca_broker, fake_alpaca

__all__ = ["alpaca_broker", "fake_alpaca"]
