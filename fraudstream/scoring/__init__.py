"""The scoring job: Spark does the work, the driver decides.

One module per stage, in the order a payment goes through them:

- ``parse``: the contract's parser and the reasons a record is set aside;
- ``records``: the query's input: Kafka records parsed on the executors, marked late
  by the driver's cutoffs, and sent through the card operator;
- ``operator``: the Java card operator (``jvm/card-operator``), keyed by card, with
  its state in Spark's state store; training runs it in a batch query;
- ``daytables``: the merchant and card-fraud values of each day, computed by Spark;
- ``batch``: the executors' passes over a micro-batch: its summary for the driver, and
  the features and scores of the payments released, then their decisions (Spark) and
  their views' rows with the reasons;
- ``model``, ``reasons``: the registered model (hot-swapped) and why it alerted;
- ``views``: what the views hold, their schemas, how they are read back;
- ``outputs``: Spark writes the views and sends alerts and dead letters to Kafka;
- ``state``: the driver's small state between micro-batches, and its rules (lateness,
  payments held in a catch-up);
- ``processor``: the ``foreachBatch`` function that runs one micro-batch;
- ``query``: the query's configuration, wiring and run loop (``jobs/score.py``,
  ``jobs/rebuild.py``);
- ``rules``: fraud-ops rules, Spark SQL conditions published on the rules topic, and
  their backtest over a history;
- ``rulelog``: the rules the job applies, logged with the offsets they apply from so
  that a replay decides the same, and each payment's decision, made by Spark.
"""
