package PVE::RS::OpenId;

# Test stand-in for the Rust OpenID module of proxmox/pve-rs: loaded at start-up by
# PVE::API2::OpenId, never called by user/role/acl/token commands.

use strict;
use warnings;

sub discover { die "OpenID is not available in this test harness\n" }
sub verify_public_auth_state { die "OpenID is not available in this test harness\n" }

1;
