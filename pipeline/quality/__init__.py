"""Data contracts of the validate stage: tables built from the data, expectations on them and
the Great Expectations runner."""
