"""fraudstream: real-time payment-fraud detection on Spark, Kafka and MLflow."""

__version__ = "0.1.0"
