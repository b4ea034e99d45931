"""The app-side SDK: scopes, context, sampling, export and auto-instrumentation.

What an application imports. It depends on the kernel (``spendtrace.schema``, ``errors``,
``settings``) and the standard library plus msgspec; aiokafka, boto3 hooks and the local store
exporter are loaded lazily, so an app recording to Kafka loads no server-side module.
"""
