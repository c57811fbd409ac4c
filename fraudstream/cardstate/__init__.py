"""Per-card feature state on Spark's executors: the JVM card operator and its Python side.

``operator.card_rows`` turns payment events into the operator's input columns (integer
cents and micro-degrees, exactly as ``features._card_rows``), ``operator.card_aggregates``
applies the Java ``StatefulProcessor`` (``jvm/card-operator``) in a batch or a streaming
query, and ``features.card_features_from_aggregates`` turns its output into the card
features of ``features.FEATURE_COLUMNS``.
"""
