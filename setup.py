"""The one thing pyproject.toml cannot say on the setuptools versions we support: the optional C reader.

``spendtrace.server.otlp._c.wire`` makes the OTLP receiver read export bodies about twice as fast
(bench_otlp.py). ``optional=True``: where no C compiler is present the install goes on and the receiver
reads upb's message objects instead, with the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("spendtrace.server.otlp._c.wire", ["spendtrace/server/otlp/_c/wire.c"], optional=True,
                  extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]),
    ]
)
