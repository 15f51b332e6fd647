/* tools/vidi/cmd_media.h — `vidi media`: what the model would be fed for
 * each image or video file (see cmd_media.c). */
#ifndef VIDI_TOOLS_CMD_MEDIA_H
#define VIDI_TOOLS_CMD_MEDIA_H

/* argv[1] is "media"; returns the process exit status (0 all files fine,
 * 1 some file failed, 2 bad usage). */
int vidi_cmd_media(int argc, char **argv);

#endif
