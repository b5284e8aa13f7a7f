"""Stockade's load benchmark: a lean XMPP load generator (bench.loadgen), throwaway Prosody and
ejabberd peers (bench.peers), a throwaway Stockade (bench.servers) and the runner (bench/run)."""
