"""The sandbox: everything the runbooks talk to, on one machine, over real protocols.

Rules: flows and tasks never import this package (they see blocks that point at it); every
server here binds to loopback only and stops cleanly, leaving no process or port behind;
components start fast and stay small, because a demo runs many of them on 2 cores.
"""
