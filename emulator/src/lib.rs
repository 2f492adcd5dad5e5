//! A 4D REST (ORDA) server emulator for db-sync's tests and benchmarks.
