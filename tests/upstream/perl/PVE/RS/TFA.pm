package PVE::RS::TFA;

# Test stand-in for the Rust TFA module of proxmox/pve-rs: loaded by PVE::AccessControl,
# used by user/token commands only to list lock status and to drop a deleted user's
# entries. priv/tfa.cfg stays opaque: written back exactly as read.

use strict;
use warnings;

sub new { my ($class, $raw) = @_; return bless { raw => $raw // '' }, $class }
sub users { return [] }
sub remove_user { return 0 }
sub tfa_lock_status { return undef }
sub write { my ($self) = @_; return $self->{raw} }

1;
