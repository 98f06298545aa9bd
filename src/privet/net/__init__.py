"""The wire between parties: versioned chunked messages (:mod:`.frames`) over gRPC with mutual TLS (:mod:`.rpc`)."""
