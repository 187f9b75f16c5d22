"""The edge: gRPC servicers (validate, call a domain service, return) and the daemon around them."""
