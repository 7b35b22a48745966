"""Async consumers (Centrifugo v6 ``consumers``: RabbitMQ, PostgreSQL outbox) and events out to
RabbitMQ.

- :mod:`.message`: the message format, typed requests, the dispatcher over the server API
  executor and the error classification (pure);
- :mod:`.events`: the events-out message and its bounded buffer (pure);
- :mod:`.amqp`: everything that speaks AMQP (the only aio-pika import);
- :mod:`.postgresql`: the outbox consumer (the only psycopg import);
- :mod:`.runner`: which worker runs what, started and stopped by the worker.
"""
