package Pvemond::RunLog;

# Loaded with -M by tests/upstream/upnode.py's wrapper: one line per pveum run, written when it
# ends, "exit-code seconds words", so tests count failed runs and the bench sums their time.
# (The wrapper execs perl, so a killed daemon still takes this pveum along.)

use strict;
use warnings;
use Time::HiRes ();

my $start = Time::HiRes::time();
my @words = @ARGV;

END {
    my $rc = $?;
    my $path = $ENV{PVEMOND_RUN_LOG};
    if ($path && open(my $fh, '>>', $path)) {
        printf $fh "%d %.4f %s\n", $rc, Time::HiRes::time() - $start, join(' ', @words);
        close($fh);
    }
    $? = $rc;
}

1;
