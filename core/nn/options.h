/* options.h -- one declarative table of options per configurable module type.
 *
 * A module type lists its options once, each with its key, type, place in the
 * type's options struct, default, accepted range and help:
 *
 *     typedef struct { int experts; double ratio; int router; } my_opts;
 *     static const ml_option my_option_list[] = {
 *         {.key = "experts", .type = ML_OPT_INT, .offset = offsetof(my_opts, experts), .def = 2, .min = 1,
 *          .max = 64, .help = "number of experts"},
 *         {.key = "router", .type = ML_OPT_CHOICE, .offset = offsetof(my_opts, router), .choices = "layer|global",
 *          .help = "..."},
 *     };
 *     const ml_options my_options = ML_OPTIONS("MyType", my_option_list);
 *
 * From that table come the defaults (ml_options_defaults), the reading of a
 * config with type and range checks (ml_options_read: from_config and the Lua
 * constructors, which turn their option table into a config), the writing of
 * config() (ml_options_write), the bindings' lists of known keys, and the
 * help texts and the option lists of docs/MODELS.md (ml.nn.options(type) in
 * Lua). Checks that tie options together (k <= experts) stay in the
 * constructor. */
#ifndef ML_NN_OPTIONS_H
#define ML_NN_OPTIONS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    ML_OPT_INT,    /* int */
    ML_OPT_NUMBER, /* double */
    ML_OPT_BOOL,   /* bool */
    ML_OPT_CHOICE, /* int: index into the '|'-separated choices; written as its name */
    ML_OPT_CONFIG, /* const cJSON *: a JSON value (a module config, a list), borrowed from the config read */
} ml_option_type;

typedef struct {
    const char *key;
    ml_option_type type;
    size_t offset;        /* of the field in the options struct */
    double def;           /* default (numbers, bools as 0/1, the choice's index) */
    double min, max;      /* accepted range of numbers, inclusive (min < max; else any) */
    const char *choices;  /* ML_OPT_CHOICE: "layer|global" */
    bool required;        /* no default: the config must give it */
    const char *def_text; /* the default as help shows it when it is computed ("(kernel - 1) / 2") */
    const char *help;
} ml_option;

typedef struct ml_options {
    const char *type; /* the module type they configure: "TokenMoE" */
    int n;
    const ml_option *list;
} ml_options;

#define ML_OPTIONS(type, list) {(type), (int)(sizeof(list) / sizeof((list)[0])), (list)}

/* Every field set to its default (required options to 0). */
void ml_options_defaults(const ml_options *t, void *out);
/* Reads cfg (a JSON object; NULL: all defaults) into out: absent or null keys
 * take their default, a required one is an error; values are type- and
 * range-checked ("TokenMoE: option 'k' must be an integer"). Keys that are
 * not options (other than "type") are refused naming the known ones, unless
 * allow_other. */
int ml_options_read(const ml_options *t, const cJSON *cfg, void *out, bool allow_other);
/* Adds every option of in to the JSON object obj. */
int ml_options_write(const ml_options *t, const void *in, cJSON *obj);
/* config(): {"type": t->type, every option of in} (a new object), or NULL + error. */
cJSON *ml_options_config(const ml_options *t, const void *in);
/* The option called key, or NULL. */
const ml_option *ml_options_find(const ml_options *t, const char *key);
/* Reads one option of t (its default, type and range) from cfg into the field
 * at out. With record, an absent value is written into cfg with the default
 * used (the zoo's complete configs). */
int ml_option_read_one(const ml_options *t, const ml_option *o, cJSON *cfg, void *field, bool record);
/* The same for the option called key; `who` names the caller in messages (NULL: t->type). */
int ml_option_read_key(const ml_options *t, const char *key, cJSON *cfg, void *field, bool record, const char *who);
/* The default as text ("8", "true", "\"layer\"", or def_text). */
void ml_option_default_text(const ml_option *o, char *buf, size_t n);
const char *ml_option_type_name(ml_option_type type); /* "integer", "number", "boolean", "choice", "config" */

#endif
