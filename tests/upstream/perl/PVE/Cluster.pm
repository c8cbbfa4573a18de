package PVE::Cluster;

# Test stand-in for pve-cluster's PVE::Cluster, which talks to pmxcfs through the XS module
# PVE::IPCC. This one keeps the contract the access-control code relies on, on plain files
# under $ENV{PVEMOND_FAKE_ROOT}/etc/pve: registered parsers and writers, raw reads (undef for
# a missing file), writes through PVE::Tools::file_set_contents, a flock in place of the cfs
# lock (with upstream's $@ contract and "cfs-lock '<id>' error: " prefix), token checks
# against priv/token.cfg, and no-ops for quorum, cluster info and the cluster log.

use strict;
use warnings;

use Fcntl qw(:flock);
use Storable qw(dclone);
use PVE::Tools;

use base 'Exporter';
our @EXPORT_OK = qw(cfs_read_file cfs_write_file cfs_register_file cfs_lock_file);

my $root = $ENV{PVEMOND_FAKE_ROOT} // die "PVEMOND_FAKE_ROOT is not set\n";
my $basedir = "$root/etc/pve";
my $file_info = {};

sub base_dir { return '/etc/pve' }
sub auth_dir { return '/etc/pve/priv' }

# A node without pmxcfs has an empty /etc/pve: pmxcfs puts the 'local' symlink there.
sub check_cfs_is_mounted {
    my ($noerr) = @_;
    my $res = -l "$basedir/local";
    die "pve configuration filesystem (pmxcfs) not mounted\n" if !$res && !$noerr;
    return $res;
}

sub check_cfs_quorum { return 1 }    # quorum is the simulator's business
sub cfs_update { }
sub get_clinfo { return {} }
sub get_members { return {} }
sub get_nodelist { return [] }
sub get_vmlist { return { ids => {} } }
sub log_msg { }
sub broadcast_tasklist { }
sub get_tasklist { return [] }

sub cfs_register_file {
    my ($filename, $parser, $writer) = @_;
    die "file '$filename' already registered" if $file_info->{$filename};
    $file_info->{$filename} = { parser => $parser, writer => $writer };
}

# No versions: pmxcfs's change counter would only let callers skip re-reading.
sub cfs_file_version {
    my ($filename) = @_;
    my $info = $file_info->{$filename} || die "unknown file type '$filename'\n";
    return wantarray ? (undef, $info) : undef;
}

# Parsed once per content, like pmxcfs's per-version cache: a parser's warnings (e.g. "user
# config - ignore invalid acl token") appear once per run, not once per read.
my $ccache = {};

sub cfs_read_file {
    my ($filename) = @_;
    my (undef, $info) = cfs_file_version($filename);
    my $path = "$basedir/$filename";
    my $raw = -e $path ? PVE::Tools::file_get_contents($path) : undef;
    my $ci = $ccache->{$filename};
    if (!$ci || ($ci->{raw} // "\0missing") ne ($raw // "\0missing")) {
        $ci = $ccache->{$filename} = { raw => $raw };
        $ci->{data} = $info->{parser}->("/etc/pve/$filename", $raw);
    }
    return ref($ci->{data}) ? dclone($ci->{data}) : $ci->{data};
}

sub cfs_write_file {
    my ($filename, $data, $force_utf8) = @_;
    my (undef, $info) = cfs_file_version($filename);
    my $writer = $info->{writer} || die "no writer defined";
    my $raw = $writer->("/etc/pve/$filename", $data);
    delete $ccache->{$filename};    # upstream forgets the cached version on write
    my $perm = $filename =~ m!^priv/! ? 0600 : 0640;    # the modes pmxcfs shows
    PVE::Tools::file_set_contents("$basedir/$filename", $raw, $perm, $force_utf8);
}

sub verify_token {
    my ($userid, $token) = @_;
    my $path = "$basedir/priv/token.cfg";
    return 0 if !-e $path;
    my $wanted = "$userid $token";
    return (grep { $_ eq $wanted } split(/\n/, PVE::Tools::file_get_contents($path))) ? 1 : 0;
}

# Upstream's cfs lock: errors of the locked code are re-raised in $@ as they are, errors of
# the locking get the "cfs-lock '<id>' error: " prefix; the result is undef on error.
my $cfs_lock = sub {
    my ($lockid, $timeout, $code, @param) = @_;
    $timeout = 10 if !$timeout;
    my ($res, $is_code_err, $fh) = (undef, 0);
    eval {
        my $lockdir = "$basedir/priv/lock";
        mkdir $lockdir;
        die "pve cluster filesystem not online.\n" if !-d $lockdir;
        open($fh, '>>', "$lockdir/$lockid") || die "unable to open lock - $!\n";
        local $SIG{ALRM} = sub { die "got lock request timeout\n" };
        alarm($timeout);
        flock($fh, LOCK_EX) || die "unable to lock - $!\n";
        alarm(0);
        $is_code_err = 1;
        $res = $code->(@param);
    };
    my $err = $@;
    alarm(0);
    close($fh) if $fh;
    if ($err) {
        $@ = (ref($err) eq 'PVE::Exception' || $is_code_err) ? $err : "cfs-lock '$lockid' error: $err";
        return undef;
    }
    $@ = undef;
    return $res;
};

sub cfs_lock_file {
    my ($filename, $timeout, $code, @param) = @_;
    (my $lockid = "file-$filename") =~ s/[.\/]/_/g;
    return $cfs_lock->($lockid, $timeout, $code, @param);
}

sub cfs_lock_domain { my ($name, @rest) = @_; return $cfs_lock->("domain-$name", @rest) }
sub cfs_lock_authkey { return $cfs_lock->('authkey', @_) }

1;
