"""Test-session settings: a persistent XLA compilation cache shared with subprocesses.

The f-UNetGAN discriminator step (two gradient penalties differentiated again) takes tens
of seconds to compile on a CPU; tests that build the same program in several processes
(resume, multi-process, launch.py runs) reuse the compiled executable from this cache.
"""
import os

import jax

CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
