/* ipc/sdk/example_ask.c — the C SDK in a few lines: ask a running vidi
 * router about images and videos and print the answer as it streams.
 *
 *   vidi up &                                    (the router and workers)
 *   vidi_client_example [--router EP] FILE... "question"
 *
 * A FILE ending in .mp4, .webm, .mkv, .mov or .avi is sent as a video, any
 * other as an image. Build: cc example_ask.c -lvidi-client (or the CMake
 * target vidi_client_example).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vidi_client.h"

static int is_video(const char *path) {
    const char *dot = strrchr(path, '.');
    static const char *const exts[] = {".mp4", ".webm", ".mkv", ".mov", ".avi"};
    for (size_t i = 0; dot && i < sizeof exts / sizeof exts[0]; i++)
        if (!strcmp(dot, exts[i])) return 1;
    return 0;
}

/* Each event of the request: print the new text. */
static int on_event(const vidi_client_event *ev, void *user) {
    (void)user;
    if (ev->type == VIDI_CLIENT_EV_TOKEN) {
        fwrite(ev->text, 1, ev->text_len, stdout);
        fflush(stdout);
    } else if (ev->type == VIDI_CLIENT_EV_DONE) {
        printf("\n[%s, %d tokens, %llu prompt tokens, %.3f s]\n", ev->finish, ev->n_tokens,
               (unsigned long long)ev->prompt_tokens, ev->total_s);
    }
    return 0; /* nonzero would cancel the request */
}

int main(int argc, char **argv) {
    const char *router = NULL;
    int first = 1;
    if (argc > 2 && !strcmp(argv[1], "--router")) router = argv[2], first = 3;
    if (argc - first < 1) {
        fprintf(stderr, "usage: %s [--router ENDPOINT] [FILE...] QUESTION\n", argv[0]);
        return 2;
    }
    char def[512];
    if (!router) router = vidi_client_default_endpoint(def, sizeof def); /* where `vidi up` puts it */
    int n_media = argc - first - 1;
    if (n_media > 16) {
        fprintf(stderr, "at most 16 files\n");
        return 2;
    }
    vidi_client_part media[16];
    for (int i = 0; i < n_media; i++) {
        const char *path = argv[first + i];
        media[i] = is_video(path) ? vidi_client_part_video_file(path) : vidi_client_part_image_file(path);
    }
    vidi_client *c;
    if (vidi_client_connect(router, NULL, &c) != VIDI_CLIENT_OK) {
        fprintf(stderr, "%s\n", vidi_client_last_error(NULL));
        return 1;
    }
    vidi_client_request_params p = vidi_client_request_params_default();
    p.max_tokens = 64;
    uint64_t id;
    const char *code = NULL;
    int rc = vidi_client_ask(c, argv[argc - 1], media, n_media, &p, &id);
    if (rc == VIDI_CLIENT_OK) rc = vidi_client_wait(c, id, on_event, NULL, NULL, &code);
    if (rc != VIDI_CLIENT_OK)
        fprintf(stderr, "error (%s%s%s): %s\n", vidi_client_status_name(rc), code ? ", " : "", code ? code : "",
                vidi_client_last_error(c));
    vidi_client_close(c);
    return rc == VIDI_CLIENT_OK ? 0 : 1;
}
