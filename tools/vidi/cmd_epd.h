/* tools/vidi/cmd_epd.h — `vidi router`, `vidi up`, `vidi ask` (cmd_epd.c). */
#ifndef VIDI_TOOLS_CMD_EPD_H
#define VIDI_TOOLS_CMD_EPD_H

/* argv[1] is the command's name; each returns the exit status. */
int vidi_cmd_router(int argc, char **argv);
int vidi_cmd_keygen(int argc, char **argv);
int vidi_cmd_up(int argc, char **argv);
int vidi_cmd_ask(int argc, char **argv);
int vidi_cmd_role(int argc, char **argv);

#endif
