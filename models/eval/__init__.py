"""Offline evaluation: the stream-order (test-then-train) protocol, its baselines and its reports.

``stream_runner.run_stream`` is the entry point; ``methods.StreamMethod`` is what a method implements.
"""
