"""Dataset conventions: `N_trigger class` folders, captions, step math, buckets, loading."""
