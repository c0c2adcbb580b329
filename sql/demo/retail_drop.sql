DROP TABLE public.payment;
DROP TABLE public.customer;
DROP TABLE public.address;
DROP FUNCTION public.last_updated();
