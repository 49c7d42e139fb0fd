"""kis-stream: KIS real-time market data into Kafka."""

__version__ = "0.1.0"
