"""The one compiled part: a batch loop over OpenSSL's SHA-256 for identifier tokens
(iae_privacy/keys/_hmacbatch.c). Everything else is in pyproject.toml.

It is optional: without a C compiler or OpenSSL's headers (Debian: libssl-dev) the install goes on
and tokens are computed by the standard library's hmac instead, with identical bytes, about 3x
slower (``iae_privacy.keys.crypto.BATCH_HMAC`` says which is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "iae_privacy.keys._hmacbatch",
            ["iae_privacy/keys/_hmacbatch.c"],
            libraries=["crypto"],
            # OpenSSL 3 marks the SHA256_* calls deprecated (in favour of EVP, which allocates per
            # copy); they are still part of its API
            extra_compile_args=["-O2", "-Wno-deprecated-declarations"],
            optional=True,
        )
    ]
)
