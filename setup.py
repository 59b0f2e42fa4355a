"""The compiled part of the build: ``protocol._speedups`` (protocol/_speedups*.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be built
(no C compiler or Python headers) pip installs the project without it and the pure-Python
code runs, with the same results (protocol/speedups.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "protocol._speedups",
            sources=[
                "protocol/_speedups.c",
                "protocol/_speedups_records.c",
                "protocol/_speedups_pull.c",
                "protocol/_speedups_index.c",
                "protocol/_speedups_cq.c",
            ],
            depends=["protocol/_speedups.h"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
