"""Generated gRPC stubs (services.common.rpc); regenerate with scripts/gen_proto.py, never edit."""
