"""The gateway's HTTP/1.1 client for backends: keep-alive connection pools, llhttp parsing.

Written for the proxy's hot path: a request is one write of bytes the gateway already has,
a response is parsed as it arrives and read chunk by chunk, and every failure becomes one
of the gateway's backend errors here (connection failure, timeout, protocol error).
"""
