/* Test-only fault injection: the failover drill and the switch tests kill a program at named
 * points instead of guessing the moment by timing.
 *
 *   UNDERSTUDY_TEST_FAULT=NAME[@N]   SIGKILL the process the Nth time (default: the first) it
 *                                    passes the point NAME, after writing
 *                                    "understudy fault: NAME@N" to stderr
 *   UNDERSTUDY_TEST_FAULT_TRACE=1    write "understudy fault point: NAME" to stderr at every point
 *
 * Neither variable is meant for production; without them a point costs one load and a branch.
 * The names are listed in FAULT_POINTS so that tests can enumerate them. */
#pragma once

/* X(name, what happens just before the point) */
#define FAULT_POINTS(X)                                                                            \
    X("agent.scan.start", "the agent starts walking the site")                                     \
    X("agent.scan.entry", "the agent has looked at one more file of the walk")                     \
    X("agent.listing.sent", "the agent has sent its listing")                                      \
    X("agent.file.sent", "the agent has sent one more file or delta")                              \
    X("agent.files.end", "the agent has sent every file the controller asked for")                 \
    X("agent.db.snapshot", "the agent's consistent snapshot is open")                              \
    X("agent.db.batch", "the agent has sent one more batch of rows")                               \
    X("agent.commit.sent", "the agent has asked the controller to commit")                         \
    X("agent.state.saved", "the agent is about to save its manifest after a success")              \
    X("controller.listing", "the controller has received the agent's listing")                     \
    X("controller.file.received", "the controller has received one more file, not yet stored")     \
    X("controller.file.stored", "the controller has stored one more received file")                \
    X("controller.build.entry", "the controller has placed one more entry of the new tree")        \
    X("controller.files.verified", "the new tree's digest has been verified")                      \
    X("controller.db.table", "the controller has imported one more table off to the side")         \
    X("controller.db.verified", "the controller has verified every imported table")                \
    X("controller.switch.journal", "the switch journal is written")                                \
    X("controller.switch.renamed", "the staged tree is renamed to generations/N")                  \
    X("controller.db.renamed", "the multi-table RENAME has run, views and triggers not yet")       \
    X("controller.switch.db", "the database is switched, the docroot not yet")                     \
    X("controller.switch.flipped", "the docroot symlink is flipped, the journal not removed")      \
    X("controller.switch.done", "the switch is complete, old generations not yet pruned")          \
    X("controller.dump", "the retention dump of the new generation is being written")              \
    X("controller.recover", "the controller is finishing or undoing a journaled switch")

/* Passes the point name: kills the process here when UNDERSTUDY_TEST_FAULT names it. */
void fault_point(const char *name);
