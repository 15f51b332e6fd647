/* tools/vidi/cmd_worker.h — `vidi worker` (see cmd_worker.c). */
#ifndef VIDI_TOOLS_CMD_WORKER_H
#define VIDI_TOOLS_CMD_WORKER_H

/* argv[1] is "worker"; returns the exit status (0 stopped cleanly, 1 failed, 2 bad usage). */
int vidi_cmd_worker(int argc, char **argv);

#endif
