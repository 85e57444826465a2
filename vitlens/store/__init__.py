"""The store: where Results live on disk and what names them.

  keys     the cache key and the request id, in one place (`Recipe`: made once per run)
  private  the private folder and the HMAC key that seals every entry
  disk     diskcache without pickles, a read-only view, one-line storage faults, sizes
  cache    `ResultCache`: Results, index records and aliases
  shipped  the demo Results shipped inside the package (read-only)
  reference  the paper's own published data as Results
  paths    configured roots, and user paths resolved safely inside them
"""
from .cache import ResultCache
from .disk import parse_size
from .keys import Recipe, cache_key, model_fingerprint, request_id
from .private import cache_dir

__all__ = ["ResultCache", "Recipe", "cache_dir", "cache_key", "model_fingerprint", "parse_size", "request_id"]
