package PVE::SafeSyslog;

# Test stand-in for pve-common's PVE::SafeSyslog: same exports, logs nowhere (a test machine
# has no /dev/log, and upstream would print a setlogsock() warning on every run).

use strict;
use warnings;

use base 'Exporter';
our @EXPORT = qw(syslog initlog);

my $log_tag = 'unknown';

sub syslog { }
sub initlog { my ($tag) = @_; $log_tag = $tag if $tag; }
sub tag { return $log_tag }

1;
