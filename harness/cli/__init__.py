"""The command lines, on top of everything and imported by nothing: ``study``, ``report``, ``query``, ``prepare``
(run as ``python -m harness.study`` etc.). They add their flag names to the library's errors (``common``)."""
