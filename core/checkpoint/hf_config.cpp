#include "checkpoint/model_spec.h"
