"""Secure aggregation (SecAgg+, Bell et al. 2020; full SecAgg, Bonawitz et al. 2017): the server learns the sum of
the clients' quantized updates and nothing else. :mod:`.plan` sizes the neighbour graph and threshold,
:mod:`.protocol` holds the two parties' state machines, independent of the transport."""
