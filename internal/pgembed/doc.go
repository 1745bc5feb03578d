// Package pgembed runs a private PostgreSQL cluster for a tasker process from the PostgreSQL
// server binaries installed on the machine, so that `tasker serve` needs no configuration.
//
// # What Start guarantees
//
//   - The binaries are found on PATH, through `pg_config --bindir`, or under
//     /usr/lib/postgresql/*/bin. A fresh cluster uses the newest version found; an existing
//     cluster uses an installed version with the same major version as the one that created it.
//     With no binaries, Start fails with ErrNoBinaries, whose message says how to install them.
//   - The data directory persists between runs. It is initialised (initdb) on first use, into a
//     temporary sibling directory that is renamed into place only when initdb succeeded, so an
//     interrupted first run never leaves a half-initialised cluster behind.
//   - The cluster listens on 127.0.0.1 only, on a free port chosen at each start (or
//     Options.Port), with its unix socket inside the data directory (or the system temporary
//     directory when that path is too long for a socket). Authentication is trust, for local
//     connections only: any local user of the machine may connect to it.
//   - The superuser is "postgres"; the database named by Options.Database is created when
//     missing. URL returns the connection URL.
//   - The cluster never outlives the process that started it. postgres runs as a direct child
//     (not daemonized by pg_ctl) in its own process group, so a Ctrl-C in a terminal reaches the
//     server only and the server decides the order of shutdown. On Linux the child is started
//     from an OS thread that stays locked for the child's whole life, with a parent-death signal
//     of SIGINT: when the server dies, even by SIGKILL, the kernel asks postgres for a fast
//     shutdown.
//   - Only one process uses a data directory at a time: Start holds an exclusive lock on
//     "<data dir>.lock" until Stop. Holding that lock proves that any postgres still running in
//     the data directory is an orphan of a dead server; Start stops such a process (fast
//     shutdown, then immediate, then SIGKILL) and waits until every process of the old cluster
//     has exited before starting its own.
//   - Stop asks for a fast shutdown (SIGINT) and waits for the exit. When its context ends first
//     it escalates to an immediate shutdown (SIGQUIT) and then SIGKILL. Stop is safe to call
//     twice.
//
// # Running as root
//
// PostgreSQL refuses to run as root. When the server runs as root, initdb and postgres run as
// the owner of an existing data directory when that owner is not root, else as the "postgres"
// user when it exists, else as "nobody"; the data directory is chowned to that user. That user
// must be able to traverse every parent directory of the data directory. When it cannot (the
// default data directory of root lies under /root, which is private) and
// Options.FallbackDataDir is set, the cluster lives there instead; FallbackDataDir returns
// /var/lib/tasker/postgres, or <temp dir>/tasker-<uid>/postgres when /var/lib is not writable.
// Without a fallback, Start fails with an error naming the directory that cannot be traversed.
package pgembed
